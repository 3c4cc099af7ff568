import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `jobs.api_key_id`: the key that created a job, so the API can hold each key to its own share of
 * running and queued jobs (EXPERTUNE_MAX_ACTIVE_JOBS_PER_KEY). Jobs of a deleted key keep running.
 */
export class JobApiKey1732400000000 implements MigrationInterface {
  name = 'JobApiKey1732400000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE jobs ADD COLUMN api_key_id uuid REFERENCES api_keys (id) ON DELETE SET NULL`);
    await queryRunner.query(
      `CREATE INDEX jobs_api_key_active_idx ON jobs (api_key_id) WHERE status IN ('queued', 'running')`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX jobs_api_key_active_idx`);
    await queryRunner.query(`ALTER TABLE jobs DROP COLUMN api_key_id`);
  }
}
