'use client';
/**
 * The new-job form, generated from the job request's zod schema (lib/form-schema): the method
 * picker shows that method's section, every section its defaults and descriptions; the same
 * schema validates as the user types and again before the request leaves.
 */
import { type Accelerator, ExpertuneApiError, type Dataset, type Model, type TrainMethod } from '@expertune/contracts';
import Link from 'next/link';
import { useRouter } from 'next/navigation';
import { useMemo, useState, type ReactNode } from 'react';

import {
  COMMON_SECTIONS,
  initialFormState,
  isAdapterMethod,
  methodOptions,
  requestFromForm,
  sectionFields,
  setPath,
  validateRequest,
  type JobFormState,
} from '../lib/form-schema';
import { formatCount, llamaShape, trainableParameters } from '../lib/params';
import { errorText, useApi } from './ApiProvider';
import { DatasetUpload } from './DatasetUpload';
import { useResource } from './hooks';
import { SchemaFields } from './SchemaFields';

const SECTION_TITLES: Record<(typeof COMMON_SECTIONS)[number], string> = {
  training: 'Training',
  optimizer: 'Optimizer',
  schedule: 'Learning-rate schedule',
  data: 'Data',
  eval: 'Evaluation',
};

/** A select of registered things (models, datasets) with an empty first choice. */
function Picker({
  name,
  label,
  value,
  choices,
  problem,
  onChange,
  empty = 'choose…',
  children,
}: {
  name: string;
  label: string;
  value: string;
  choices: { id: string; text: string }[];
  problem: string | undefined;
  onChange: (value: string) => void;
  /** The text of the empty first choice. */
  empty?: string;
  children?: ReactNode;
}) {
  return (
    <div className="field">
      <label htmlFor={`f-${name}`}>{label}</label>
      <select
        id={`f-${name}`}
        value={value}
        onChange={(e) => onChange(e.target.value)}
        aria-invalid={problem ? true : undefined}
        data-testid={`field-${name}`}
      >
        <option value="">{empty}</option>
        {choices.map((c) => (
          <option key={c.id} value={c.id}>
            {c.text}
          </option>
        ))}
      </select>
      {children}
      <Problem text={problem} />
    </div>
  );
}

/** "cuda-h100 — 3 queued, 1 running, 2 workers": where a job of that class would wait. */
export function acceleratorText(a: Accelerator): string {
  const workers =
    a.workers === null
      ? 'workers unknown'
      : a.workers === 0
        ? 'no worker now'
        : `${a.workers} worker${a.workers === 1 ? '' : 's'}`;
  return `${a.id} — ${a.queued} queued, ${a.running} running, ${workers}`;
}

/** A field's problem under it, announced to screen readers. */
function Problem({ text }: { text: string | undefined }) {
  return text ? (
    <span className="problem" role="alert">
      {text}
    </span>
  ) : null;
}

export function NewJobForm() {
  const { client } = useApi();
  const router = useRouter();
  const [state, setState] = useState<JobFormState>(() => initialFormState('lora'));
  const [attempted, setAttempted] = useState(false);
  const [submitting, setSubmitting] = useState(false);
  const [serverProblem, setServerProblem] = useState<{ message: string; param: string | null } | null>(null);
  const models = useResource(() => client.models.list({ limit: 100 }), [client]);
  const datasets = useResource(() => client.datasets.list({ limit: 100 }), [client]);
  const accelerators = useResource(() => client.accelerators.list(), [client], 10_000);
  const model = useResource<Model | null>(
    () => (state.model ? client.models.get(state.model) : Promise.resolve(null)),
    [client, state.model],
  );

  const methods = useMemo(() => methodOptions(), []);
  const methodFields = useMemo(
    () => (isAdapterMethod(state.method) ? sectionFields(state.method) : []),
    [state.method],
  );
  const commonFields = useMemo(() => COMMON_SECTIONS.map((name) => ({ name, fields: sectionFields(name) })), []);
  const request = useMemo(() => requestFromForm(state), [state]);
  const problems = useMemo(() => {
    const all = validateRequest(request);
    if (!state.model) all.set('model', 'choose a base model');
    if (!state.training_file) all.set('training_file', 'choose or upload a training dataset');
    if (serverProblem?.param && !all.has(serverProblem.param)) all.set(serverProblem.param, serverProblem.message);
    return all;
  }, [request, state.model, state.training_file, serverProblem]);
  const shownProblems = useMemo(() => {
    if (attempted) return problems;
    const shown = new Map(problems);
    for (const key of ['model', 'training_file']) shown.delete(key);
    return shown;
  }, [problems, attempted]);

  const count = useMemo(() => {
    if (!model.data) return { text: 'choose a model to count', ok: false };
    const shape = llamaShape(model.data.config as Record<string, unknown> | undefined);
    if (typeof shape === 'string') return { text: shape, ok: false };
    try {
      const section = isAdapterMethod(state.method) ? state.sections[state.method] : {};
      const n = trainableParameters(shape, state.method, section as Parameters<typeof trainableParameters>[2]);
      const share =
        model.data.parameter_count > 0
          ? ` (${((100 * n) / model.data.parameter_count).toFixed(2)}% of ${formatCount(model.data.parameter_count)})`
          : '';
      return { text: `${formatCount(n)}${share}`, ok: true };
    } catch (error) {
      return { text: (error as Error).message, ok: false };
    }
  }, [model.data, state.method, state.sections]);

  const update = (path: string[], value: unknown) => {
    setServerProblem(null);
    // Paths of section fields are ['hyperparameters', <section>, ...].
    if (path[0] === 'hyperparameters')
      setState((old) => ({ ...old, sections: setPath(old.sections, path.slice(1), value) }));
    else setState((old) => ({ ...old, [path[0]!]: value }));
  };

  const submit = async () => {
    setAttempted(true);
    if (problems.size > 0) {
      const first = document.querySelector<HTMLElement>('[aria-invalid="true"]');
      first?.focus();
      return;
    }
    setSubmitting(true);
    try {
      const job = await client.jobs.create(request as unknown as Parameters<typeof client.jobs.create>[0]);
      router.push(`/jobs/${job.id}`);
    } catch (error) {
      setServerProblem(
        error instanceof ExpertuneApiError
          ? { message: error.error.message, param: error.error.param }
          : { message: errorText(error), param: null },
      );
      setSubmitting(false);
    }
  };

  const datasetOptions = (datasets.data?.data ?? []) as Dataset[];
  const fieldProps = { problems: shownProblems, onChange: update };

  return (
    <form
      noValidate
      data-testid="new-job-form"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <h1>New job</h1>
      <section className="card" aria-labelledby="basics">
        <h2 id="basics">Model and data</h2>
        <div className="form-grid">
          <Picker
            name="model"
            label="Base model"
            value={state.model}
            choices={(models.data?.data ?? []).map((m) => ({
              id: m.id,
              text: `${m.name} (${formatCount(m.parameter_count)} params)`,
            }))}
            problem={shownProblems.get('model')}
            onChange={(value) => update(['model'], value)}
          >
            <span className="help">
              Registered models (<Link href="/models">Models</Link>).
            </span>
          </Picker>
          <Picker
            name="training_file"
            label="Training dataset"
            value={state.training_file}
            choices={datasetOptions.map((d) => ({ id: d.id, text: `${d.filename} (${d.stats.rows} rows, ${d.id})` }))}
            problem={shownProblems.get('training_file')}
            onChange={(value) => update(['training_file'], value)}
          />
          <Picker
            name="accelerator"
            label="Accelerator"
            value={state.accelerator}
            empty="cpu (the default)"
            choices={(accelerators.data?.data ?? []).map((a) => ({ id: a.id, text: acceleratorText(a) }))}
            problem={shownProblems.get('accelerator')}
            onChange={(value) => update(['accelerator'], value)}
          >
            <span className="help">
              The queue that takes the job; it waits there until a worker of that class is free.
            </span>
          </Picker>
          <div className="field">
            <label htmlFor="f-validation_file">Validation dataset (optional)</label>
            <select
              id="f-validation_file"
              value={state.validation_file}
              onChange={(e) => update(['validation_file'], e.target.value)}
              data-testid="field-validation_file"
            >
              <option value="">none</option>
              {datasetOptions.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.filename} ({d.id})
                </option>
              ))}
            </select>
            {shownProblems.has('hyperparameters.data.validation_fraction') && state.validation_file && (
              <span className="problem">{shownProblems.get('hyperparameters.data.validation_fraction')}</span>
            )}
          </div>
        </div>
        <DatasetUpload
          modelId={state.model || undefined}
          onUploaded={(dataset) => {
            datasets.reload();
            update(['training_file'], dataset.id);
          }}
        />
      </section>

      <section className="card" aria-labelledby="method-title">
        <h2 id="method-title">Method</h2>
        <fieldset className="checks method-picker" data-testid="method-picker">
          <legend className="sr-only">Method</legend>
          {methods.map((m) => (
            <label key={m.method} htmlFor={`method-${m.method}`} title={m.description}>
              <input
                type="radio"
                id={`method-${m.method}`}
                name="method"
                value={m.method}
                checked={state.method === m.method}
                onChange={() => update(['method'], m.method as TrainMethod)}
                data-testid={`method-${m.method}`}
              />{' '}
              {m.method}
            </label>
          ))}
        </fieldset>
        <p className="muted" data-testid="method-description">
          {methods.find((m) => m.method === state.method)?.description}
        </p>
        <p>
          Trainable parameters:{' '}
          <span className={count.ok ? 'param-count' : 'muted'} data-testid="trainable-params" aria-live="polite">
            {count.text}
          </span>
        </p>
        {methodFields.length > 0 && (
          <div className="form-grid" data-testid="method-fields">
            <SchemaFields fields={methodFields} values={state.sections[state.method]} root={2} {...fieldProps} />
          </div>
        )}
      </section>

      {commonFields.map(({ name, fields }) => (
        <details key={name} className="card" open={name === 'training'} data-testid={`section-${name}`}>
          <summary>{SECTION_TITLES[name]}</summary>
          <div className="form-grid">
            <SchemaFields fields={fields} values={state.sections[name]} root={2} {...fieldProps} />
          </div>
        </details>
      ))}

      <section className="card" aria-labelledby="run-title">
        <h2 id="run-title">Run</h2>
        <div className="form-grid">
          <div className="field">
            <label htmlFor="f-seed">Seed</label>
            <input
              id="f-seed"
              type="text"
              inputMode="numeric"
              value={state.seed === undefined ? '' : String(state.seed)}
              onChange={(e) => {
                const n = Number(e.target.value);
                update(['seed'], e.target.value.trim() === '' ? undefined : Number.isFinite(n) ? n : e.target.value);
              }}
              aria-invalid={shownProblems.has('seed') || undefined}
              data-testid="field-seed"
            />
            <Problem text={shownProblems.get('seed')} />
          </div>
          <div className="field">
            <label htmlFor="f-suffix">Suffix (optional)</label>
            <input
              id="f-suffix"
              type="text"
              value={state.suffix}
              onChange={(e) => update(['suffix'], e.target.value)}
              aria-invalid={shownProblems.has('suffix') || undefined}
              data-testid="field-suffix"
            />
            <Problem text={shownProblems.get('suffix')} />
          </div>
        </div>
      </section>

      <div className="sticky-actions">
        <button type="submit" disabled={submitting} data-testid="submit-job">
          {submitting ? 'Launching…' : 'Launch job'}
        </button>
        {attempted && problems.size > 0 && (
          <span role="alert" className="error" data-testid="form-problems">
            {problems.size} problem{problems.size === 1 ? '' : 's'}:{' '}
            {[...problems].map(([k, v]) => `${k}: ${v}`).join('; ')}
          </span>
        )}
        {serverProblem && !serverProblem.param && (
          <span role="alert" className="error" data-testid="server-problem">
            {serverProblem.message}
          </span>
        )}
      </div>
    </form>
  );
}
