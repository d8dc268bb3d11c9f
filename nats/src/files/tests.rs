use super::*;

#[test]
fn names_are_confined_to_relative_normal_paths() {
    for good in ["a.txt", "dir/b.bin", "x y/z"] {
        check_name(good).expect(good);
    }
    for bad in
        ["", "/etc/passwd", "../secret", "a/../../b", "./a", "a/./b", "a\\b", "a/", "a\0b", "a//b"]
    {
        assert_eq!(check_name(bad).expect_err(bad).code, ErrorCode::InvalidRequest, "{bad}");
    }
    assert!(check_name(&"n".repeat(NAME_BYTES_MAX + 1)).is_err());
}

#[test]
fn digests_are_lower_case_hex() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
