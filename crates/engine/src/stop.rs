//! Stop strings: text is held back while it could still turn into a stop string, so a
//! client never sees part of one.

/// Tracks generated text against stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

/// What to do with new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Safe to emit.
    Emit(String),
    /// A stop string matched; emit this text (before it) and stop.
    Stop(String),
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> StopStrings {
        StopStrings {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns what can be shown now.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.pending.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome::Emit(std::mem::take(&mut self.pending));
        }
        // Earliest complete match wins.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stop(out);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in self.pending.char_indices() {
                let suffix = &self.pending[i..];
                if s.starts_with(suffix) {
                    keep = keep.max(suffix.len());
                    break;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Emit(out)
    }

    /// Text still held back at the end of generation (no stop matched).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_matches_and_stops_on_full_ones() {
        let mut s = StopStrings::new(vec!["</end>".into()]);
        assert_eq!(s.push("hello <"), StopOutcome::Emit("hello ".into()));
        assert_eq!(s.push("/e"), StopOutcome::Emit("".into()));
        assert_eq!(s.push("x"), StopOutcome::Emit("</ex".into()));
        assert_eq!(s.push(" ok </en"), StopOutcome::Emit(" ok ".into()));
        assert_eq!(s.push("d> tail"), StopOutcome::Stop("".into()));
    }

    #[test]
    fn text_before_the_stop_is_kept() {
        let mut s = StopStrings::new(vec!["STOP".into(), "xy".into()]);
        assert_eq!(s.push("abcSTOPxy"), StopOutcome::Stop("abc".into()));
        let mut s = StopStrings::new(vec![]);
        assert_eq!(s.push("anything"), StopOutcome::Emit("anything".into()));
        let mut s = StopStrings::new(vec!["é!".into()]);
        assert_eq!(s.push("caféé"), StopOutcome::Emit("café".into()));
        assert_eq!(s.finish(), "é");
    }
}
