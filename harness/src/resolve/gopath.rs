//! Go's `path/filepath` and `strconv.Quote` semantics, as containerd and dockerd apply them.
//!
//! The model must compute exactly the strings Go computes: containerd joins the directory part of a runtime name with a
//! binary name that may itself contain `/` or `..`, and `filepath.Join` cleans the result. Rust's `Path` does not clean
//! lexically (it keeps `..` and treats `a/./b` differently), so the few functions involved are ported here.

/// Which operating system's path rules apply. Only Linux is resolved against a file system; Windows is modelled
/// as far as naming and path classification go (see `containerd::plan_for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Linux,
    Windows,
}

impl Platform {
    fn is_separator(self, byte: u8) -> bool {
        match self {
            Platform::Linux => byte == b'/',
            Platform::Windows => byte == b'/' || byte == b'\\',
        }
    }

    fn separator(self) -> u8 {
        match self {
            Platform::Linux => b'/',
            Platform::Windows => b'\\',
        }
    }
}

/// `filepath.Clean` on Linux.
pub fn clean(path: &str) -> String {
    clean_for(path, Platform::Linux)
}

/// `filepath.Clean` for either platform (Windows: volume name kept, both separators accepted, `\` written).
pub fn clean_for(path: &str, platform: Platform) -> String {
    let volume_len = volume_name_len(path, platform);
    let (volume, rest) = path.split_at(volume_len);
    if rest.is_empty() {
        if volume_len > 1 && platform.is_separator(path.as_bytes()[0]) && platform.is_separator(path.as_bytes()[1]) {
            return from_slash(path, platform);
        }
        return format!("{volume}.");
    }
    let cleaned = clean_without_volume(rest.as_bytes(), platform);
    let mut out = from_slash(volume, platform);
    out.push_str(&cleaned);
    out
}

fn from_slash(path: &str, platform: Platform) -> String {
    match platform {
        Platform::Linux => path.to_owned(),
        Platform::Windows => path.replace('/', "\\"),
    }
}

/// The lexical algorithm of Go's `Clean`, byte for byte (it only ever removes or inserts ASCII separators and dots,
/// so UTF-8 stays intact).
fn clean_without_volume(path: &[u8], platform: Platform) -> String {
    let separator = platform.separator();
    let length = path.len();
    let rooted = platform.is_separator(path[0]);
    let mut out: Vec<u8> = Vec::with_capacity(length);
    let mut read = 0;
    let mut dotdot = 0;
    if rooted {
        out.push(separator);
        read = 1;
        dotdot = 1;
    }
    while read < length {
        let at_end = |i: usize| i == length || platform.is_separator(path[i]);
        if platform.is_separator(path[read]) || (path[read] == b'.' && at_end(read + 1)) {
            // An empty or `.` element.
            read += 1;
        } else if path[read] == b'.' && read + 1 < length && path[read + 1] == b'.' && at_end(read + 2) {
            read += 2;
            if out.len() > dotdot {
                // Back up to (and drop) the previous separator, as Go's `w--; for w > dotdot && buf[w] != sep { w-- }`.
                let mut removed = out.pop();
                while out.len() > dotdot && removed != Some(separator) {
                    removed = out.pop();
                }
            } else if !rooted {
                if !out.is_empty() {
                    out.push(separator);
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(separator);
            }
            while read < length && !platform.is_separator(path[read]) {
                out.push(path[read]);
                read += 1;
            }
        }
    }
    if out.is_empty() {
        return ".".to_owned();
    }
    // Only ASCII bytes were inserted or dropped at separator boundaries, so this cannot split a code point.
    String::from_utf8(out).unwrap_or_else(|bytes| String::from_utf8_lossy(bytes.as_bytes()).into_owned())
}

/// `filepath.Join` on Linux: empty elements are ignored, the result is cleaned, all-empty gives "".
pub fn join(elements: &[&str]) -> String {
    let kept: Vec<&str> = elements.iter().copied().filter(|e| !e.is_empty()).collect();
    if kept.is_empty() {
        return String::new();
    }
    clean(&kept.join("/"))
}

/// `filepath.Dir` on Linux.
pub fn dir(path: &str) -> String {
    dir_for(path, Platform::Linux)
}

/// `filepath.Dir` for either platform.
pub fn dir_for(path: &str, platform: Platform) -> String {
    let volume_len = volume_name_len(path, platform);
    let bytes = path.as_bytes();
    let mut end = bytes.len();
    while end > volume_len && !platform.is_separator(bytes[end - 1]) {
        end -= 1;
    }
    let directory = clean_for(&path[volume_len..end], platform);
    let volume = &path[..volume_len];
    if directory == "." && volume_len > 2 {
        return volume.to_owned();
    }
    format!("{volume}{directory}")
}

/// `filepath.IsAbs` on Linux.
pub fn is_abs(path: &str) -> bool {
    path.starts_with('/')
}

/// `filepath.IsAbs` for either platform (Windows: a drive letter followed by a separator, or a UNC path).
pub fn is_abs_for(path: &str, platform: Platform) -> bool {
    match platform {
        Platform::Linux => is_abs(path),
        Platform::Windows => {
            let volume_len = volume_name_len(path, platform);
            if volume_len == 0 {
                return false;
            }
            if is_unc(path) {
                return true;
            }
            path.as_bytes().get(volume_len).is_some_and(|b| platform.is_separator(*b))
        }
    }
}

fn is_unc(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() > 2 && Platform::Windows.is_separator(bytes[0]) && Platform::Windows.is_separator(bytes[1])
}

/// Length of the volume name: `C:` or `\\host\share` on Windows, always 0 on Linux.
fn volume_name_len(path: &str, platform: Platform) -> usize {
    if platform == Platform::Linux {
        return 0;
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return 2;
    }
    if bytes.len() >= 5 && is_unc(path) && !platform.is_separator(bytes[2]) && bytes[2] != b'.' {
        // \\host\share: the volume runs to the separator after the share name.
        let mut index = 3;
        while index < bytes.len() && !platform.is_separator(bytes[index]) {
            index += 1;
        }
        if index < bytes.len() {
            index += 1;
            let share_start = index;
            while index < bytes.len() && !platform.is_separator(bytes[index]) {
                index += 1;
            }
            if index > share_start {
                return index;
            }
        }
    }
    0
}

/// `filepath.Abs` as containerd's process computes it: relative paths are joined to its working directory.
pub fn abs(cwd: &str, path: &str) -> String {
    if is_abs(path) {
        clean(path)
    } else {
        join(&[cwd, path])
    }
}

/// `filepath.SplitList` on Linux: an empty PATH has no entries; otherwise split on `:` (empty entries kept).
pub fn split_list(path_var: &str) -> Vec<String> {
    if path_var.is_empty() {
        return Vec::new();
    }
    path_var.split(':').map(str::to_owned).collect()
}

/// Go's `strconv.Quote` (the `%q` verb) for valid UTF-8: escapes `"` and `\`, ASCII controls by their short escapes
/// or `\xNN`, and non-printable non-ASCII runes as `\uNNNN`/`\UNNNNNNNN`. Printable Unicode is kept as is.
///
/// Go's notion of "printable" is `unicode.IsPrint`; this approximation treats control characters, format characters
/// in the common ranges, and non-ASCII spaces as non-printable, which covers what runtime names plausibly contain.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_printable(character: char) -> bool {
    if character.is_ascii() {
        return !character.is_ascii_control();
    }
    if character.is_control() || character.is_whitespace() {
        return false;
    }
    let code = character as u32;
    let format_or_private = matches!(code,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !format_or_private
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        let cases = [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "Clean({input:?})");
        }
    }

    #[test]
    fn join_dir_abs_match_go() {
        assert_eq!(join(&["", ""]), "");
        assert_eq!(join(&["a", ""]), "a");
        assert_eq!(join(&["", "b"]), "b");
        assert_eq!(join(&[".", "containerd-shim--/x"]), "containerd-shim--/x");
        assert_eq!(join(&["..", "containerd-shim--/x"]), "../containerd-shim--/x");
        assert_eq!(join(&["/", "a"]), "/a");
        assert_eq!(dir("./x"), ".");
        assert_eq!(dir("../x"), "..");
        assert_eq!(dir("x"), ".");
        assert_eq!(dir("my/io.containerd.runc.v2"), "my");
        assert_eq!(dir("./fake/containerd-shim-runc-v2"), "fake");
        assert_eq!(dir("/"), "/");
        assert_eq!(dir("/a"), "/");
        assert_eq!(dir("io\\containerd.runc.v2"), ".");
        assert_eq!(abs("/srv", "x"), "/srv/x");
        assert_eq!(abs("/", "containerd-shim--/x"), "/containerd-shim--/x");
        assert_eq!(abs("/srv", "../x"), "/x");
        assert_eq!(abs("/srv", ""), "/srv");
        assert_eq!(abs("/srv", "/a//b/../c"), "/a/c");
    }

    #[test]
    fn windows_paths() {
        let w = Platform::Windows;
        assert!(is_abs_for("C:\\shims\\io.containerd.runc.v2", w));
        assert!(is_abs_for("C:/shims", w));
        assert!(!is_abs_for("C:shims", w));
        assert!(!is_abs_for("\\shims", w));
        assert!(is_abs_for("\\\\host\\share\\x", w));
        assert!(!is_abs_for("io\\containerd.runc.v2", w));
        assert_eq!(dir_for("io\\containerd.runc.v2", w), "io");
        assert_eq!(dir_for("C:\\shims\\x", w), "C:\\shims");
        assert_eq!(dir_for("x", w), ".");
        assert_eq!(clean_for("a/b\\..\\c", w), "a\\c");
    }

    #[test]
    fn split_list_matches_go() {
        assert!(split_list("").is_empty());
        assert_eq!(split_list(":"), vec!["", ""]);
        assert_eq!(split_list("/a::/b"), vec!["/a", "", "/b"]);
    }

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("io.containerd.runc.v2"), "\"io.containerd.runc.v2\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote("a\tb"), "\"a\\tb\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(quote("ランタイム"), "\"ランタイム\"");
        assert_eq!(quote("a b "), "\"a b \"");
        assert_eq!(quote("\u{1}"), "\"\\x01\"");
        assert_eq!(quote("\u{a0}"), "\"\\u00a0\"");
        assert_eq!(quote("\u{200b}"), "\"\\u200b\"");
    }
}
