// Faults that break more cases than the ones naming them in `breaks_with` (see suite.rs `also_breaks`).
// Each entry is a claim checked in both directions by the self-test.
pub const ALSO_BREAKS: &[(&str, &[&str])] = &[];
