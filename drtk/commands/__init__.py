"""CLI subcommands: the pipeline layer, and the only code that decides where files go."""
