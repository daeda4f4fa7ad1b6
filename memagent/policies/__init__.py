"""memagent.policies."""
