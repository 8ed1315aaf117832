"""The shared end-to-end fixtures (``redis_server``, ``fleet``, ``producer``, ``app_dir``) of
:mod:`bananas_redis.e2e_fixtures`."""

from bananas_redis.e2e_fixtures import app_dir, fleet, producer, redis_server  # noqa: F401 - pytest fixtures
