import { describe, expect, it } from 'vitest';

import { routingPoints } from '../src/runner.js';

describe('routingPoints', () => {
  it('averages each layer over its projections: loads per expert, entropy, broadcast', () => {
    const points = routingPoints(7, [
      { layer: 0, load: [0.5, 0.5], entropy: 0.6, broadcast: 0.1 },
      { layer: 0, load: [1, 0], entropy: 0.2, broadcast: 0.3 },
      { layer: 1, load: [0.25, 0.75], entropy: null, broadcast: null },
    ]);
    const byName = Object.fromEntries(points.map((p) => [p.name, p.value]));
    expect(points.every((p) => p.step === 7)).toBe(true);
    expect(byName).toEqual({
      'routing/load/0/0': 0.75,
      'routing/load/0/1': 0.25,
      'routing/entropy/0': 0.4,
      'routing/broadcast/0': 0.2,
      'routing/load/1/0': 0.25,
      'routing/load/1/1': 0.75,
    });
  });
});
