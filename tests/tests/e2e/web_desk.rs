//! Placeholder: filled in by the browser-page work (issue 14).
