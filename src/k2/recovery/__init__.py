"""Disaster recovery: consistent, incremental backups of the lake and registry (`k2 backup`), and rebuilding a
working K2 from one (`k2 restore`). Kafka offsets travel inside the tables' snapshots, so a restored lake resumes
ingestion exactly where its backup point stood (decision 0021)."""
