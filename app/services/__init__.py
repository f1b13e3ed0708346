"""Business rules. Routes parse and answer; services decide and touch the ORM."""
