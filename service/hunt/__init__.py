"""Retro-hunt: Sigma rules converted to Elasticsearch/OpenSearch queries and run over indexed history."""
