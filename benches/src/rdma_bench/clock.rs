//! Timestamps for latency samples.
//!
//! `Instant::now` can be a system call: in a VM whose clocksource is the
//! HPET (the soft-RoCE VM under TCG), it costs about 1 µs, a few percent of
//! the request it would time. So, as perftest's `get_cycles`, samples are
//! taken with the CPU's time-stamp counter on x86_64, converted to time with
//! a rate calibrated against `Instant` when the clock is made (perftest's
//! `get_cpu_mhz`). Elsewhere the clock is `Instant`.
//!
//! The counter is assumed to tick at a constant rate, as on every x86_64
//! CPU of the last decade (`constant_tsc`) and under qemu.

use std::time::{Duration, Instant};

/// How long the calibration takes.
const CALIBRATION: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Nanoseconds per tick of [`Clock::now`].
    ns_per_tick: f64,
    #[cfg(not(target_arch = "x86_64"))]
    origin: Instant,
}

impl Clock {
    /// Measures the counter's rate; takes [`CALIBRATION`].
    pub fn calibrate() -> Clock {
        #[cfg(target_arch = "x86_64")]
        {
            let started = Instant::now();
            let ticks_started = read_counter();
            std::thread::sleep(CALIBRATION);
            let ticks = read_counter().wrapping_sub(ticks_started);
            let elapsed = started.elapsed();
            assert!(ticks > 0, "the time-stamp counter does not tick");
            Clock {
                ns_per_tick: elapsed.as_nanos() as f64 / ticks as f64,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Clock {
                ns_per_tick: 1.0,
                origin: Instant::now(),
            }
        }
    }

    /// A timestamp, in ticks.
    #[inline]
    pub fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            read_counter()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.origin.elapsed().as_nanos() as u64
        }
    }

    /// The time between two timestamps.
    pub fn between(&self, earlier: u64, later: u64) -> Duration {
        let ticks = later.saturating_sub(earlier);
        Duration::from_nanos((ticks as f64 * self.ns_per_tick).round() as u64)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn read_counter() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU, takes no operands and
    // touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrated_clock_agrees_with_instant() {
        let clock = Clock::calibrate();
        let started = Instant::now();
        let ticks_started = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let measured = clock.between(ticks_started, clock.now());
        let reference = started.elapsed();
        let error = measured.as_secs_f64() / reference.as_secs_f64();
        assert!(
            (0.9..1.1).contains(&error),
            "{measured:?} by the clock, {reference:?} by Instant"
        );
    }
}
