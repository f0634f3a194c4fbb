"""The customer's session example (shared/seed/sessions.md), unchanged except for the credentials,
which come from the environment with harmless defaults (the embedded store ignores the key)."""

import asyncio
import os

from moss import DocumentInfo, MossClient, QueryOptions

MOSS_PROJECT_ID = os.environ.get("MOSS_PROJECT_ID", "quickstart")
MOSS_PROJECT_KEY = os.environ.get("MOSS_PROJECT_KEY", "local")


async def main():
    client = MossClient(MOSS_PROJECT_ID, MOSS_PROJECT_KEY)

    # Open a session: new local index, or load an existing cloud index by name.
    session = await client.session(index_name="notes")

    # Add documents (embedded and indexed locally).
    added, updated = await session.add_docs([
        DocumentInfo(id="1", text="Ship the on-device SDK by Friday."),
        DocumentInfo(id="2", text="Follow up with the LiveKit team about latency."),
    ])
    print(f"{added} added, {updated} updated, {session.doc_count} total")

    # Query the in-memory index.
    results = await session.query("what's due this week", QueryOptions(top_k=3))
    for doc in results.docs:
        print(f"{doc.id} score={doc.score:.3f} {doc.text}")

asyncio.run(main())
