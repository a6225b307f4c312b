"""The Kafka input, in one package: client settings (:mod:`.client`), offsets and rebalances
(:mod:`.offsets`), the dead-letter topic (:mod:`.deadletters`) and the source (:mod:`.source`),
whose batches run through the pipeline core overlapped (screen, decode, detect, submit, acknowledge).
"""

from service.sources.kafka.client import client_kwargs, consumer_kwargs
from service.sources.kafka.deadletters import DLQ_HEADER_PREFIX, DeadLetterWriter, dead_letter_headers
from service.sources.kafka.offsets import OffsetTracker, Rebalance, commit, committed_with_metadata
from service.sources.kafka.source import KafkaSource, Records, subscription_pattern

__all__ = ["DLQ_HEADER_PREFIX", "DeadLetterWriter", "KafkaSource", "OffsetTracker", "Rebalance", "Records",
           "client_kwargs", "commit", "committed_with_metadata", "consumer_kwargs", "dead_letter_headers",
           "subscription_pattern"]
