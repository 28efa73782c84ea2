"""Paging of the list routes: ``?limit=&offset=``, answered as ``{"data": [...], "count": N}``.

``count`` is the number of items in the whole list, so a client pages with ``offset += limit``
until ``offset >= count``. Every list route sorts in a fixed order (its docstring says which), so
pages do not overlap while nothing is added or removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list route."""

    data: list[T] = Field(description="the items of this page, in the route's order")
    count: int = Field(description="the number of items in the whole list (not just this page)")
    limit: int = Field(description="the most items a page holds (as asked)")
    offset: int = Field(description="the index of this page's first item in the whole list")


class PageParams(BaseModel):
    limit: int
    offset: int

    def of(self, items: Sequence[T]) -> Page[T]:
        """The page of ``items`` (the whole list, in order) these parameters ask for."""
        return Page[T](data=list(items[self.offset : self.offset + self.limit]), count=len(items),
                       limit=self.limit, offset=self.offset)  # fmt: skip


async def _page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="the most items to return")] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, description="how many items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(_page_params)]
