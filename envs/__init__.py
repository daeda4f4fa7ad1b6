"""Non-stationary Gymnasium environments and wrappers."""
