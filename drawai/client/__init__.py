"""A Python client of the Draw.AI API: ``Client`` (blocking) and ``AsyncClient`` (asyncio), on httpx.

    from drawai.client import Client

    with Client("http://127.0.0.1:8000") as api:  # key: DRAWAI_API_KEY, or api_key=
        ds = api.datasets.upload("scans.zip", progress=lambda sent, total: print(sent, total))
        job = api.jobs.train(ds.id, preset="quick")
        for event in api.jobs.watch(job.id):  # Server-Sent Events until the job ends
            print(event.event, event.job.status, event.progress.get("epoch"))
        out = api.generate(count=16, seed=0, label="yes")  # PIL images, with seeds and classes

Results are the API's own pydantic models (``DatasetInfo``, ``JobView``, ``ModelSummary``...); errors raise
``DrawAIError`` (``status``, ``detail``). See docs/client.md.
"""

from drawai.client._async import AsyncClient
from drawai.client._base import DrawAIError, RetryPolicy
from drawai.client._events import JobEvent
from drawai.client._generate import Generated
from drawai.client._sync import Client

__all__ = ["AsyncClient", "Client", "DrawAIError", "Generated", "JobEvent", "RetryPolicy"]
