//! Compatibility tests against acmetool's state directory (to be written).
