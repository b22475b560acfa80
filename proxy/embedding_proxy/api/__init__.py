"""The two dialects callers speak, TEI's and OpenAI's: request parsing, groups, answer splitting,
what a forwarded request may carry, and the error shapes. Pure."""
