"""The HTTP API: a service beside the chain that answers what it sees."""
