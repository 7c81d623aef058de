"""Scripts and the `saex` command line that drive the `sae` library: fetching, harvesting
(and, as the project grows, training and evaluating SAEs)."""
