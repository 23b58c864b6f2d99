"""``make bench``: mbyn measured against Kafka's own performance tools (see ``bench/run.py``)."""
