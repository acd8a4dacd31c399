//! Who decides what to do about a failure: a [`Classify`], by default [`DefaultClassifier`], which follows
//! what the failure's error [diagnosed](crate::Diagnose) of itself. Part of the core.

use crate::diagnose::Classification;
use crate::error::Failure;

/// Classifies failures. Any `Fn(&Failure) -> Classification + Send` closure is a classifier.
///
/// # Examples
///
/// ```
/// use stream_tungstenite::{Classification, DefaultClassifier, Classify, Failure};
///
/// // Permission errors are fatal; everything else as the default decides.
/// let classifier = |failure: &Failure| match failure.downcast_ref::<std::io::Error>() {
///     Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Classification::Fatal,
///     _ => DefaultClassifier.classify(failure),
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

/// The default classifier: what the failure's error said about itself ([`Failure::diagnosis`]), and retry
/// when it said nothing.
///
/// For WebSocket connections that gives the failure classes of [`ws`](crate::ws): invalid URLs, certificate
/// errors, HTTP 4xx and protocol-fault close codes are fatal, 429/503 with `Retry-After` wait that long,
/// everything else is retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, failure: &Failure) -> Classification {
        failure.diagnosis().classification().unwrap_or(Classification::Retry)
    }
}

/// A classifier that retries every failure, whatever its error says.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAll;

impl Classify for RetryAll {
    fn classify(&self, _failure: &Failure) -> Classification {
        Classification::Retry
    }
}
