/**
 * Server-rendered trees (react-dom/server, no DOM): the generated form fields, the routing panel's
 * empty and collapse states, the key form, and the job bits.
 */
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';

import { initialFormState, sectionFields } from '../lib/form-schema';
import type { NamedSeries } from '../lib/routing';
import { KeyForm } from './ApiProvider';
import { Progress, StatusBadge } from './JobBits';
import { RoutingPanel } from './RoutingPanel';
import { SchemaFields } from './SchemaFields';

const noop = () => {};

describe('SchemaFields', () => {
  it("renders MoLA's section with labels, defaults, ranges and descriptions", () => {
    const state = initialFormState('mola');
    const html = renderToStaticMarkup(
      <SchemaFields
        fields={sectionFields('mola')}
        values={state.sections.mola}
        root={2}
        problems={new Map()}
        onChange={noop}
      />,
    );
    expect(html).toContain('<label for="f-hyperparameters-mola-rank">rank</label>');
    expect(html).toContain('value="8"');
    expect(html).toContain('Rank r of each expert · default 8 · &gt; 0');
    expect(html).toContain('data-testid="field-hyperparameters.mola.target_modules"');
    // the preset variant of num_experts is shown, with its preset picker
    expect(html).toContain('id="f-hyperparameters-mola-num_experts-preset"');
    expect(html).toMatch(/<option value="inverted_triangle" selected="">inverted_triangle<\/option>/);
    // the nested balance section
    expect(html).toContain('<legend>balance</legend>');
  });

  it('marks a field invalid and says why', () => {
    const state = initialFormState('lora');
    const html = renderToStaticMarkup(
      <SchemaFields
        fields={sectionFields('lora')}
        values={state.sections.lora}
        root={2}
        problems={new Map([['hyperparameters.lora.rank', 'Too small: expected number to be >0']])}
        onChange={noop}
      />,
    );
    expect(html).toMatch(/id="f-hyperparameters-lora-rank"[^>]*aria-invalid="true"/);
    expect(html).toContain('role="alert">Too small: expected number to be &gt;0</span>');
  });
});

describe('RoutingPanel', () => {
  it('says "no routing data" without routing series', () => {
    const html = renderToStaticMarkup(<RoutingPanel series={[]} />);
    expect(html).toContain('data-testid="no-routing"');
    expect(html).toContain('no routing data');
  });

  it('warns about a collapsed expert and draws a heatmap per layer', () => {
    const load = (expert: number, value: number): NamedSeries => ({
      name: `routing/load/0/${expert}`,
      steps: [1, 2, 3],
      values: [value, value, value],
    });
    const html = renderToStaticMarkup(
      <RoutingPanel series={[load(0, 0.5), load(1, 0.45), load(2, 0.05), load(3, 0.0)]} />,
    );
    expect(html).toContain('data-testid="collapse-warning"');
    expect(html).toContain('layer 0 expert 3 (load 0, 0% of a fair share)');
    expect(html).toContain('data-testid="heatmap-layer-0"');
    expect(html).not.toContain('no-routing');
  });
});

describe('KeyForm and job bits', () => {
  it('asks for the key again after a 401', () => {
    const html = renderToStaticMarkup(<KeyForm expired onKey={noop} />);
    expect(html).toContain('data-testid="key-expired"');
    expect(html).toContain('type="password"');
  });

  it('shows status and progress with accessible text', () => {
    const job = { status: 'running' as const, cancel_requested: true, steps_completed: 5, total_steps: 20 };
    expect(renderToStaticMarkup(<StatusBadge job={job} />)).toContain('running (cancelling)');
    expect(renderToStaticMarkup(<Progress job={job} />)).toContain('aria-label="5 / 20 steps"');
  });
});
