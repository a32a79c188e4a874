"""Table and shard contracts (pyarrow schemas, shard layout) and their validators."""
