"""Feature slicing and operator grouping: token-wise modules and Wan blocks run in slices of the token axis, exactly,
as twins that share the original module's parameters."""
