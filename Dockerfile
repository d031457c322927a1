# One campaign per container: `docker run -p 8765:8765 arbiter` serves the default startales campaign.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/arbiter/numba \
    NUMBA_NUM_THREADS=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 arbiter \
 && mkdir -p /var/cache/arbiter/numba /data \
 && chown -R arbiter:arbiter /var/cache/arbiter /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY sim ./sim
COPY netcode ./netcode
COPY persistence ./persistence
COPY hub ./hub
COPY bench ./bench
# The browser pages and SDK (/play, /watch, /web/): served from here, not from the installed package.
COPY web ./web
ENV ARBITER_WEB_DIR=/app/web
RUN pip install . && chown -R arbiter:arbiter /app

USER arbiter
# Compile the kernels once at build time so a container starts ticking in well under a second.
RUN python -c "from sim.registry import make_game; [make_game(g).warmup() for g in ('startales', 'wander')]"

EXPOSE 8765
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=2).status == 200 else 1)"

ENTRYPOINT ["arbiter"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8765", "--data-dir", "/data", "--game", "startales", "--campaign", "default"]
