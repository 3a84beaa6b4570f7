//! Typed statuses of the records: a deployment's [`Outcome`], a step's [`Phase`] and
//! [`StepState`]. Stored as the same lower-case words as before (`rolled_back`,
//! `timed_out`), so every backend and every older store reads them alike.

/// A `Copy` enum stored as lower-case words: `as_str`, `ALL`, `FromStr` (erring with
/// [`UnknownWord`]), `Display`, comparison with `&str` and `Serialize` as the word.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::status::UnknownWord;
            fn from_str(s: &str) -> Result<Self, $crate::status::UnknownWord> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err($crate::status::UnknownWord {
                        what: stringify!($name),
                        word: s.to_string(),
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

pub(crate) use word_enum;

word_enum!(
    /// How a deployment ended, or that it has not.
    Outcome {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled_back",
        RollbackFailed = "rollback_failed",
        Interrupted = "interrupted",
        /// A `watch` step was inconclusive; `stagegate decide` settles it.
        AwaitingDecision = "awaiting_decision",
        /// Its process died before it finished; closed by the next run or `unlock`.
        Abandoned = "abandoned",
        /// A protected deployment or promotion waits for approvals, a wait timer or a soak;
        /// `stagegate approve` and `promote` settle it.
        AwaitingApproval = "awaiting_approval",
        /// A promotion request whose conditions held; the deployment it started has its own
        /// row.
        Approved = "approved",
        /// A promotion request somebody rejected.
        Rejected = "rejected",
        /// A promotion request whose plan or artifact changed; its approvals no longer count.
        Voided = "voided",
    }
);

word_enum!(
    /// Which part of a run a step belongs to.
    Phase {
        Run = "run",
        Rollback = "rollback",
    }
);

word_enum!(
    /// Where a step stands.
    StepState {
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        TimedOut = "timed_out",
        Skipped = "skipped",
        Cancelled = "cancelled",
    }
);

/// A stored word that names no known status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not a known {what}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub word: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), *o);
        }
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), *s);
        }
        assert!("done".parse::<Phase>().is_err());
        assert_eq!(Outcome::RolledBack, "rolled_back");
        for (o, w) in [
            (Outcome::AwaitingApproval, "awaiting_approval"),
            (Outcome::Approved, "approved"),
            (Outcome::Rejected, "rejected"),
            (Outcome::Voided, "voided"),
        ] {
            assert_eq!(o.as_str(), w);
            assert_eq!(w.parse::<Outcome>().unwrap(), o);
            assert!(Outcome::ALL.contains(&o));
        }
        for v in crate::Verdict::ALL {
            assert_eq!(v.as_str().parse::<crate::Verdict>().unwrap(), *v);
        }
        assert_eq!("approved".parse(), Ok(crate::Verdict::Approved));
        assert_eq!("rejected".parse(), Ok(crate::Verdict::Rejected));
        assert!("maybe".parse::<crate::Verdict>().is_err());
        assert_eq!(
            serde_json::to_string(&crate::Verdict::Rejected).unwrap(),
            "\"rejected\""
        );
    }
}
