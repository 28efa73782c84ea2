"""Datasets: upload, list, show, delete. (placeholder, being written)"""

from fastapi import APIRouter

router = APIRouter(prefix="/datasets", tags=["datasets"])
