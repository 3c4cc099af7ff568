import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The tracking schema of the job API: models, datasets, jobs and what a job leaves behind
 * (attempts, events, metrics, checkpoints, artifacts), plus hashed API keys.
 *
 * Enums are text + CHECK rather than Postgres enum types: adding a value is one
 * `ALTER TABLE … DROP/ADD CONSTRAINT` inside a transaction, where `ALTER TYPE … ADD VALUE` is not.
 */
export class TrackingSchema1732300000000 implements MigrationInterface {
  name = 'TrackingSchema1732300000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE api_keys (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        prefix text NOT NULL CONSTRAINT api_keys_prefix_key UNIQUE,
        key_hash text NOT NULL,
        scopes text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        expires_at timestamptz,
        revoked_at timestamptz,
        CONSTRAINT api_keys_scopes_check CHECK (scopes <@ ARRAY['read', 'launch', 'admin']::text[])
      )`);

    await queryRunner.query(`
      CREATE TABLE models (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL CONSTRAINT models_name_key UNIQUE,
        path text NOT NULL,
        config jsonb NOT NULL DEFAULT '{}',
        parameter_count bigint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);

    await queryRunner.query(`
      CREATE TABLE datasets (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        filename text NOT NULL,
        storage_key text NOT NULL,
        bytes bigint NOT NULL CONSTRAINT datasets_bytes_check CHECK (bytes >= 0),
        sha256 char(64) NOT NULL,
        rows integer NOT NULL CONSTRAINT datasets_rows_check CHECK (rows >= 0),
        stats jsonb NOT NULL DEFAULT '{}',
        preview jsonb NOT NULL DEFAULT '[]',
        created_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz
      )`);

    // jobs and artifacts reference each other: jobs first, its result_artifact_id FK after artifacts.
    await queryRunner.query(`
      CREATE TABLE jobs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        status text NOT NULL DEFAULT 'queued'
          CONSTRAINT jobs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        method text NOT NULL,
        base_model_id uuid NOT NULL CONSTRAINT jobs_base_model_id_fkey REFERENCES models (id),
        training_dataset_id uuid NOT NULL CONSTRAINT jobs_training_dataset_id_fkey REFERENCES datasets (id),
        validation_dataset_id uuid CONSTRAINT jobs_validation_dataset_id_fkey REFERENCES datasets (id),
        config jsonb NOT NULL,
        seed integer NOT NULL,
        suffix text,
        metadata jsonb NOT NULL DEFAULT '{}',
        accelerator text NOT NULL DEFAULT 'cpu',
        steps_completed integer NOT NULL DEFAULT 0,
        total_steps integer,
        tokens_processed bigint NOT NULL DEFAULT 0,
        error jsonb,
        result_artifact_id uuid,
        attempt integer NOT NULL DEFAULT 0,
        worker_id text,
        heartbeat_at timestamptz,
        cancel_requested_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
      )`);
    // Listing is newest first with a (created_at, id) cursor, optionally filtered by status.
    await queryRunner.query(`CREATE INDEX jobs_status_created_at_idx ON jobs (status, created_at)`);
    await queryRunner.query(`CREATE INDEX jobs_created_at_idx ON jobs (created_at, id)`);

    await queryRunner.query(`
      CREATE TABLE job_attempts (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        job_id uuid NOT NULL CONSTRAINT job_attempts_job_id_fkey REFERENCES jobs (id) ON DELETE CASCADE,
        attempt integer NOT NULL,
        worker_id text NOT NULL,
        resumed_from_step integer,
        started_at timestamptz NOT NULL DEFAULT now(),
        ended_at timestamptz,
        outcome text,
        CONSTRAINT job_attempts_job_id_attempt_key UNIQUE (job_id, attempt)
      )`);

    await queryRunner.query(`
      CREATE TABLE job_events (
        id bigserial PRIMARY KEY,
        job_id uuid NOT NULL CONSTRAINT job_events_job_id_fkey REFERENCES jobs (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        level text NOT NULL CONSTRAINT job_events_level_check CHECK (level IN ('info', 'warning', 'error')),
        type text NOT NULL,
        message text NOT NULL,
        data jsonb
      )`);
    await queryRunner.query(`CREATE INDEX job_events_job_id_id_idx ON job_events (job_id, id)`);

    // Append-only. The primary key makes a resumed job unable to store a step twice, and is the
    // (job, name, step) index the series queries read.
    await queryRunner.query(`
      CREATE TABLE metrics (
        job_id uuid NOT NULL CONSTRAINT metrics_job_id_fkey REFERENCES jobs (id) ON DELETE CASCADE,
        name text NOT NULL,
        step integer NOT NULL,
        value double precision NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT metrics_pkey PRIMARY KEY (job_id, name, step)
      )`);

    await queryRunner.query(`
      CREATE TABLE checkpoints (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        job_id uuid NOT NULL CONSTRAINT checkpoints_job_id_fkey REFERENCES jobs (id) ON DELETE CASCADE,
        step integer NOT NULL,
        storage_key text NOT NULL,
        eval_loss double precision,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT checkpoints_job_id_step_key UNIQUE (job_id, step)
      )`);

    await queryRunner.query(`
      CREATE TABLE artifacts (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        job_id uuid CONSTRAINT artifacts_job_id_fkey REFERENCES jobs (id) ON DELETE SET NULL,
        kind text NOT NULL CONSTRAINT artifacts_kind_check CHECK (kind IN ('adapter', 'model', 'checkpoint', 'dataset')),
        name text NOT NULL,
        storage_key text NOT NULL,
        bytes bigint NOT NULL CONSTRAINT artifacts_bytes_check CHECK (bytes >= 0),
        sha256 char(64) NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    await queryRunner.query(`CREATE INDEX artifacts_job_id_idx ON artifacts (job_id)`);

    await queryRunner.query(`
      ALTER TABLE jobs ADD CONSTRAINT jobs_result_artifact_id_fkey
        FOREIGN KEY (result_artifact_id) REFERENCES artifacts (id) ON DELETE SET NULL`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE jobs DROP CONSTRAINT jobs_result_artifact_id_fkey`);
    await queryRunner.query(`DROP TABLE artifacts`);
    await queryRunner.query(`DROP TABLE checkpoints`);
    await queryRunner.query(`DROP TABLE metrics`);
    await queryRunner.query(`DROP TABLE job_events`);
    await queryRunner.query(`DROP TABLE job_attempts`);
    await queryRunner.query(`DROP TABLE jobs`);
    await queryRunner.query(`DROP TABLE datasets`);
    await queryRunner.query(`DROP TABLE models`);
    await queryRunner.query(`DROP TABLE api_keys`);
  }
}
