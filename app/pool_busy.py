"""A request that finds no free database connection in time is answered 503 with a message, not 500."""
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout


async def pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
    return JSONResponse({"detail": "The server is busy: no database connection came free in time. Try again in a few seconds."},
                        status_code=503, headers={"Retry-After": "5"})


HANDLER = (PoolTimeout, pool_timeout)  # app.add_exception_handler(*HANDLER)
