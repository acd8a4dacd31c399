//! Failure classes: what to do about a [`Failure`].

use std::time::Duration;

use crate::Failure;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Classification {
    /// Retry after the delay the retry policy gives.
    Retry,
    /// Retry, waiting at least this long (for example an HTTP `Retry-After`), or longer if the policy says so.
    RetryAfter(Duration),
    /// Do not retry: the stream ends at once with [`Error::Fatal`](crate::Error::Fatal).
    Fatal,
}

/// Classifies failures. Any `Fn(&Failure) -> Classification + Send` closure is a classifier.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::{Classification, Failure};
///
/// let classifier = |failure: &Failure| match failure.downcast_ref::<std::io::Error>() {
///     Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Classification::Fatal,
///     _ => Classification::Retry,
/// };
/// # let _ = stream_tungstenite::ReconnectingStream::<_, ()>::new(|| async {
/// #     Err::<futures::stream::Empty<Result<(), std::io::Error>>, std::io::Error>(std::io::ErrorKind::Other.into())
/// # }).with_classifier(classifier);
/// ```
pub trait Classify: Send {
    /// Decides what to do about `failure`.
    fn classify(&self, failure: &Failure) -> Classification;
}

impl<F> Classify for F
where
    F: Fn(&Failure) -> Classification + Send,
{
    fn classify(&self, failure: &Failure) -> Classification {
        self(failure)
    }
}

/// The default classifier: the WebSocket failure classes of [`ws::classify`](crate::ws::classify) for the
/// error types this crate and tungstenite define; every other failure is retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, failure: &Failure) -> Classification {
        crate::ws::classify(failure)
    }
}

/// A classifier that retries every failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAll;

impl Classify for RetryAll {
    fn classify(&self, _failure: &Failure) -> Classification {
        Classification::Retry
    }
}
