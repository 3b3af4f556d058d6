"""Min/max bucket downsampling: a chart gets at most max_points per series and a spike stays visible."""


def min_max_buckets(points: list[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """Keep the first and last point, and per bucket of consecutive points its minimum and maximum, in step order."""
    n = len(points)
    if n <= max_points or max_points < 4:
        return points if n <= max_points else points[:: max(1, n // max_points)][:max_points]
    buckets = (max_points - 2) // 2
    inner = points[1:-1]
    size = len(inner) / buckets
    out = [points[0]]
    for b in range(buckets):
        chunk = inner[int(b * size): int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        out.extend(sorted({lo, hi}, key=lambda p: p[0]))
    out.append(points[-1])
    return out
