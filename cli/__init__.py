"""The `atlas` command line (console script `atlas`, or `python -m cli`): a layer above the core
package `atlas` and the jobs in `ingest` and `api`, which never import it. cli/main.py holds the root
command; db.py, jobs.py (`atlas ingest ...`), demo.py and read.py its commands; common.py what they share."""
