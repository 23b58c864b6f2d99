#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts: write the basic-auth user of the Kafdrop proxy
# from the environment. No password, no proxy: the container exits and Kafdrop stays unreachable from the host.
set -eu
if [ -z "${KAFDROP_PASSWORD:-}" ]; then
    echo "kafdrop-proxy: set KAFDROP_PASSWORD (environment or .env) to reach Kafdrop; refusing to start without a login" >&2
    exit 1
fi
umask 077
# {PLAIN} scheme of ngx_http_auth_basic_module; the file lives only inside this container.
printf '%s:{PLAIN}%s\n' "${KAFDROP_USER:-admin}" "$KAFDROP_PASSWORD" > /etc/nginx/kafdrop.htpasswd
chown nginx /etc/nginx/kafdrop.htpasswd
