# The connector image: the same steps as scripts/bootstrap on a fresh Debian 12, nothing
# more.  Mount a configuration at /etc/connector/connector.yaml and a volume at /data
# (the durable ledger); secrets come from the environment (secret_env in the config).
#
#   docker build -t ilp-connector .
#   docker run -v $PWD/examples:/etc/connector -v ledger:/data \
#     -e ALICE_BTP_SECRET=... -e BOB_BTP_SECRET=... \
#     -e CONNECTOR__NODE__DATA_DIR=/data -e CONNECTOR__BTP_SERVER__HOST=0.0.0.0 \
#     -e CONNECTOR__HTTP__HOST=0.0.0.0 -p 7768:7768 -p 9464:9464 \
#     ilp-connector run --config /etc/connector/single-node.yaml
FROM debian:12-slim

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/connector
COPY . .
# The interpreter is built into the image's cache directory; the npm interop packages
# are for the test suite only.
ENV CONNECTOR_CACHE=/opt/connector-cache CONNECTOR_SKIP_NPM=1
RUN scripts/bootstrap && rm -rf /root/.cache/pip

EXPOSE 7768 9464
ENTRYPOINT ["/opt/connector/.venv/bin/connector"]
CMD ["demo"]
