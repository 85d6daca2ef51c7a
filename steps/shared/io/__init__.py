"""Object storage (local paths, s3://) and secrets kept out of output."""
