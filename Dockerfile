# One image for every role: web, celery, beat and proxy workers differ only in their command.
FROM python:3.13-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORTICO_VAR_DIR=/var/lib/portico
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN mkdir -p /var/lib/portico && PORTICO_SECRET_KEY=build PORTICO_FLEET_KEY=build-fleet-key-0000 \
    PORTICO_DATA_KEY=build python manage.py collectstatic --no-input -v0
EXPOSE 8000 80 443
CMD ["gunicorn", "--chdir", "platform", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
