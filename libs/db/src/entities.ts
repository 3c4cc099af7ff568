import 'reflect-metadata';
import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  PrimaryGeneratedColumn,
  type Relation,
  type ValueTransformer,
} from 'typeorm';

// Every column names its SQL type: Vitest's transform emits no decorator metadata, and the
// migration (not TypeORM) is the source of truth for the schema anyway.

/** pg returns bigint as a string; sizes, counts and parameter totals stay far below 2^53. */
const bigintAsNumber: ValueTransformer = {
  to: (value: number | null | undefined) => value,
  from: (value: string | null) => {
    if (value === null) return null;
    const n = Number(value);
    if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${value} does not fit a JavaScript number`);
    return n;
  },
};

export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const API_KEY_SCOPES = ['read', 'launch', 'admin'] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

export const EVENT_LEVELS = ['info', 'warning', 'error'] as const;
export type EventLevel = (typeof EVENT_LEVELS)[number];

export const ARTIFACT_KINDS = ['adapter', 'model', 'checkpoint', 'dataset'] as const;
export type ArtifactKind = (typeof ARTIFACT_KINDS)[number];

/** The `error` of a failed job, shaped like the API's error body. */
export interface JobError {
  code: string;
  message: string;
  param?: string | null;
}

@Entity({ name: 'api_keys' })
export class ApiKey {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text' })
  name!: string;

  /** Shown to users (`et_<prefix>…`) and used to find the row; the secret part is only hashed. */
  @Column({ type: 'text', unique: true })
  prefix!: string;

  /** `scrypt$N$r$p$salt$hash` (base64url): the parameters travel with the hash. Not selected by default. */
  @Column({ name: 'key_hash', type: 'text', select: false })
  keyHash!: string;

  @Column({ type: 'text', array: true })
  scopes!: ApiKeyScope[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'last_used_at', type: 'timestamptz', nullable: true })
  lastUsedAt!: Date | null;

  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true })
  expiresAt!: Date | null;

  @Column({ name: 'revoked_at', type: 'timestamptz', nullable: true })
  revokedAt!: Date | null;
}

@Entity({ name: 'models' })
export class Model {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text', unique: true })
  name!: string;

  /** A local Hugging Face model directory (config.json, *.safetensors, tokenizer.json). */
  @Column({ type: 'text' })
  path!: string;

  @Column({ type: 'jsonb' })
  config!: Record<string, unknown>;

  @Column({ name: 'parameter_count', type: 'bigint', transformer: bigintAsNumber })
  parameterCount!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

@Entity({ name: 'datasets' })
export class Dataset {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text' })
  name!: string;

  @Column({ type: 'text' })
  filename!: string;

  @Column({ name: 'storage_key', type: 'text' })
  storageKey!: string;

  @Column({ type: 'bigint', transformer: bigintAsNumber })
  bytes!: number;

  @Column({ type: 'char', length: 64 })
  sha256!: string;

  @Column({ type: 'integer' })
  rows!: number;

  /** Token statistics of the dataset (lengths, totals), as computed at upload. */
  @Column({ type: 'jsonb' })
  stats!: Record<string, unknown>;

  @Column({ type: 'jsonb' })
  preview!: unknown[];

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'deleted_at', type: 'timestamptz', nullable: true })
  deletedAt!: Date | null;
}

@Entity({ name: 'jobs' })
@Index('jobs_status_created_at_idx', ['status', 'createdAt'])
export class Job {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text', default: 'queued' })
  status!: JobStatus;

  @Column({ type: 'text' })
  method!: string;

  @Column({ name: 'base_model_id', type: 'uuid' })
  baseModelId!: string;

  @ManyToOne(() => Model, { onDelete: 'NO ACTION' })
  @JoinColumn({ name: 'base_model_id' })
  baseModel?: Relation<Model>;

  @Column({ name: 'training_dataset_id', type: 'uuid' })
  trainingDatasetId!: string;

  @ManyToOne(() => Dataset)
  @JoinColumn({ name: 'training_dataset_id' })
  trainingDataset?: Relation<Dataset>;

  @Column({ name: 'validation_dataset_id', type: 'uuid', nullable: true })
  validationDatasetId!: string | null;

  @ManyToOne(() => Dataset, { nullable: true })
  @JoinColumn({ name: 'validation_dataset_id' })
  validationDataset?: Relation<Dataset> | null;

  /** The resolved training config (every default filled in), as the worker runs it. */
  @Column({ type: 'jsonb' })
  config!: Record<string, unknown>;

  @Column({ type: 'integer' })
  seed!: number;

  @Column({ type: 'text', nullable: true })
  suffix!: string | null;

  @Column({ type: 'jsonb', default: () => "'{}'" })
  metadata!: Record<string, string>;

  @Column({ type: 'text', default: 'cpu' })
  accelerator!: string;

  /** The API key that created the job (per-key job limits); null once that key is deleted. */
  @Column({ name: 'api_key_id', type: 'uuid', nullable: true })
  apiKeyId!: string | null;

  @Column({ name: 'steps_completed', type: 'integer', default: 0 })
  stepsCompleted!: number;

  @Column({ name: 'total_steps', type: 'integer', nullable: true })
  totalSteps!: number | null;

  @Column({ name: 'tokens_processed', type: 'bigint', default: 0, transformer: bigintAsNumber })
  tokensProcessed!: number;

  @Column({ type: 'jsonb', nullable: true })
  error!: JobError | null;

  @Column({ name: 'result_artifact_id', type: 'uuid', nullable: true })
  resultArtifactId!: string | null;

  @ManyToOne(() => Artifact, { nullable: true, onDelete: 'SET NULL' })
  @JoinColumn({ name: 'result_artifact_id' })
  resultArtifact?: Relation<Artifact> | null;

  @Column({ type: 'integer', default: 0 })
  attempt!: number;

  @Column({ name: 'worker_id', type: 'text', nullable: true })
  workerId!: string | null;

  @Column({ name: 'heartbeat_at', type: 'timestamptz', nullable: true })
  heartbeatAt!: Date | null;

  @Column({ name: 'cancel_requested_at', type: 'timestamptz', nullable: true })
  cancelRequestedAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'started_at', type: 'timestamptz', nullable: true })
  startedAt!: Date | null;

  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true })
  finishedAt!: Date | null;
}

/**
 * A row that belongs to one job (`job_id`, deleted with it). Abstract and not an entity: its
 * columns are inherited by the entities that extend it.
 */
export abstract class JobChildRow {
  @Column({ name: 'job_id', type: 'uuid' })
  jobId!: string;

  @ManyToOne(() => Job, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id' })
  job?: Relation<Job>;
}

/** A job's row with a uuid primary key. */
export abstract class JobOwnedRow extends JobChildRow {
  @PrimaryGeneratedColumn('uuid')
  id!: string;
}

@Entity({ name: 'job_attempts' })
@Index('job_attempts_job_id_attempt_key', ['jobId', 'attempt'], { unique: true })
export class JobAttempt extends JobOwnedRow {
  @Column({ type: 'integer' })
  attempt!: number;

  @Column({ name: 'worker_id', type: 'text' })
  workerId!: string;

  @Column({ name: 'resumed_from_step', type: 'integer', nullable: true })
  resumedFromStep!: number | null;

  @Column({ name: 'started_at', type: 'timestamptz', default: () => 'now()' })
  startedAt!: Date;

  @Column({ name: 'ended_at', type: 'timestamptz', nullable: true })
  endedAt!: Date | null;

  @Column({ type: 'text', nullable: true })
  outcome!: string | null;
}

@Entity({ name: 'job_events' })
@Index('job_events_job_id_id_idx', ['jobId', 'id'])
export class JobEvent extends JobChildRow {
  /** bigserial, as pg's decimal string: ordered, so it doubles as the SSE `Last-Event-ID` cursor. */
  @PrimaryGeneratedColumn('increment', { type: 'bigint' })
  id!: string;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ type: 'text' })
  level!: EventLevel;

  @Column({ type: 'text' })
  type!: string;

  @Column({ type: 'text' })
  message!: string;

  @Column({ type: 'jsonb', nullable: true })
  data!: Record<string, unknown> | null;
}

/** One point of a training curve. Write with `insertMetrics`, read with `metricSeries`. */
@Entity({ name: 'metrics' })
export class Metric {
  @PrimaryColumn({ name: 'job_id', type: 'uuid' })
  jobId!: string;

  @ManyToOne(() => Job, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id' })
  job?: Relation<Job>;

  @PrimaryColumn({ type: 'text' })
  name!: string;

  @PrimaryColumn({ type: 'integer' })
  step!: number;

  @Column({ type: 'double precision' })
  value!: number;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

@Entity({ name: 'checkpoints' })
@Index('checkpoints_job_id_step_key', ['jobId', 'step'], { unique: true })
export class Checkpoint extends JobOwnedRow {
  @Column({ type: 'integer' })
  step!: number;

  @Column({ name: 'storage_key', type: 'text' })
  storageKey!: string;

  @Column({ name: 'eval_loss', type: 'double precision', nullable: true })
  evalLoss!: number | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

@Entity({ name: 'artifacts' })
export class Artifact {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ name: 'job_id', type: 'uuid', nullable: true })
  jobId!: string | null;

  @ManyToOne(() => Job, { nullable: true, onDelete: 'SET NULL' })
  @JoinColumn({ name: 'job_id' })
  job?: Relation<Job> | null;

  @Column({ type: 'text' })
  kind!: ArtifactKind;

  @Column({ type: 'text' })
  name!: string;

  @Column({ name: 'storage_key', type: 'text' })
  storageKey!: string;

  @Column({ type: 'bigint', transformer: bigintAsNumber })
  bytes!: number;

  @Column({ type: 'char', length: 64 })
  sha256!: string;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

export const ENTITIES = [ApiKey, Model, Dataset, Job, JobAttempt, JobEvent, Metric, Checkpoint, Artifact] as const;
