"""Kafka clients only: client configuration and the broker wait (``clients``), what observers ask the broker
(``inspect``), the producer (``producer``), the consumer client (``consumer``), topics apply (``admin``) and
SCRAM users and ACLs (``security``). The consumer contract and its loop live with the consumers
(``mbyn.consumers.contract``, ``mbyn.consumers.runtime``); the local cluster in ``mbyn.local.kafka``."""
