"""framechain, the application: the CLI and the plan of stage processes."""
