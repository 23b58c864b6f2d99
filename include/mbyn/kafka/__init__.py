"""Kafka plumbing: the local cluster, topic administration, producer and consumer runtimes."""
