"""Real servers on loopback for integration tests, CI and local development.

Kafka and an OpenSearch node run from jars fetched from Maven Central, Elasticsearch 8
and 9 from Elastic's integration-test zips there;
Prometheus and Alertmanager are the Debian binaries. Each ``start`` uses fresh
data directories under the given work dir and free loopback ports, logs to a
file there, and is undone by ``stop`` (the whole process group). See
``docs/dev-services.md``.
"""
