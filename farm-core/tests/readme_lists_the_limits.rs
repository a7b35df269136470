//! The README's table of limits is `limits.rs`'s: every constant it names
//! has the value it states. (A limit changed in code and not in the
//! README would mislead every reader.)

use farm_core::limits::{
    CONTEXTS_MAX, COPIES_MAX, INCARNATIONS, NODES_MAX, OBJECT_PAYLOAD_MAX, RECORD_BYTES_MAX,
    RECORD_OBJECTS_LARGEST, RECORD_OBJECTS_SMALLEST, REGIONS_MAX, REGION_BYTES_MAX,
};

/// "1,637" → 1637; "2 GiB" → 2^31; "4,194,304 (2^22)" → 4194304.
fn number(text: &str) -> u64 {
    let text = text.trim();
    if let Some(gib) = text.strip_suffix(" GiB") {
        return gib.parse::<u64>().unwrap() << 30;
    }
    let digits: String = text
        .split(' ')
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn readme_limits_table_matches_limits_rs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let expected: [(&str, u64); 8] = [
        ("NODES_MAX", NODES_MAX as u64),
        ("COPIES_MAX", COPIES_MAX as u64),
        ("REGIONS_MAX", REGIONS_MAX as u64),
        ("REGION_BYTES_MAX", REGION_BYTES_MAX),
        ("OBJECT_PAYLOAD_MAX", u64::from(OBJECT_PAYLOAD_MAX)),
        ("CONTEXTS_MAX", CONTEXTS_MAX as u64),
        ("RECORD_BYTES_MAX", RECORD_BYTES_MAX as u64),
        ("INCARNATIONS", INCARNATIONS),
    ];
    for (constant, value) in expected {
        let row = readme
            .lines()
            .find(|line| line.starts_with('|') && line.contains(&format!("`{constant}`")))
            .unwrap_or_else(|| panic!("the README's limits table has no row for {constant}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(number(cells[2]), value, "README row {row:?}");
    }
    assert!(readme.contains(&format!(
        "at most {RECORD_OBJECTS_LARGEST} objects of the largest"
    )));
    let smallest = format!(
        "{},{:03}",
        RECORD_OBJECTS_SMALLEST / 1000,
        RECORD_OBJECTS_SMALLEST % 1000
    );
    assert!(
        readme.contains(&format!("{smallest} objects of up to 8 bytes")),
        "{smallest}"
    );
}
