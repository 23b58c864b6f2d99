-- Run once by the postgres image when its volume is empty (docker-entrypoint-initdb.d), as POSTGRES_USER.
-- POSTGRES_DB creates the warehouse database `mbyn`; Airflow's metadata gets its own database here.
CREATE DATABASE airflow;
