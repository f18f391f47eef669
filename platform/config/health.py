from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """Liveness and database reachability, for load balancers and compose health checks."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok"})


def server_error(request):
    """The 500 handler. A database outage is not a bug in the request: answer 503 with a clear
    message (and Retry-After), so clients and people know to retry and that nothing was applied."""
    import sys

    from django.db import DatabaseError, InterfaceError, OperationalError
    from django.views.defaults import server_error as django_server_error

    exc = sys.exc_info()[1]
    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    ):
        message = "The database is unavailable, so this request was not applied. Please retry in a minute."
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            response = JsonResponse({"detail": message, "code": "database_unavailable"}, status=503)
        else:
            from django.http import HttpResponse

            response = HttpResponse(
                f"<!doctype html><title>Temporarily unavailable</title><h1>Temporarily unavailable</h1><p>{message}</p>",
                status=503,
            )
        response["Retry-After"] = "30"
        return response
    return django_server_error(request)
