"""Knowledge-base documents: normalization and chunking before embedding."""
