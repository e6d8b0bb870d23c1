import pytest
from bench_models import User
from sqlalchemy import func, select

pytestmark = pytest.mark.asyncio


async def test_0(async_db_session, async_seeded_users):
    assert await async_db_session.scalar(select(func.count()).select_from(User)) == 5
