import { describe, expect, it } from 'vitest';

import { formatDuration, formatMetric, formatTicks, formatTime, jobDuration, progressFraction } from './format';

describe('format', () => {
  it('durations', () => {
    expect(formatDuration(45)).toBe('45 s');
    expect(formatDuration(200)).toBe('3 min 20 s');
    expect(formatDuration(7500)).toBe('2 h 05 min');
    expect(formatDuration(3 * 86400 + 4 * 3600)).toBe('3 d 4 h');
    expect(formatDuration(null)).toBe('—');
    expect(jobDuration({ started_at: 100, finished_at: null }, 160)).toBe(60);
    expect(jobDuration({ started_at: 100, finished_at: 130 }, 160)).toBe(30);
    expect(jobDuration({ started_at: null, finished_at: null }, 160)).toBeNull();
  });

  it('times in UTC and metrics to 4 significant digits', () => {
    expect(formatTime(0)).toBe('1970-01-01 00:00');
    expect(formatMetric(2.345678)).toBe('2.346');
    expect(formatMetric(0.0002)).toBe('2.000e-4');
    expect(formatMetric(0)).toBe('0');
    expect(formatMetric(null)).toBe('—');
  });

  it('progress', () => {
    expect(progressFraction({ steps_completed: 5, total_steps: 20, status: 'running' })).toBe(0.25);
    expect(progressFraction({ steps_completed: 0, total_steps: null, status: 'queued' })).toBeNull();
    expect(progressFraction({ steps_completed: 3, total_steps: null, status: 'succeeded' })).toBe(1);
  });

  it('labels axis ticks apart, in exponent form for a learning rate', () => {
    expect(formatTicks([0, 1e-4, 2e-4, 3e-4])).toEqual(['0', '1e-4', '2e-4', '3e-4']);
    expect(formatTicks([6.5, 6.75, 7, 7.25])).toEqual(['6.5', '6.75', '7', '7.25']);
    expect(formatTicks([1000, 1250, 1500])).toEqual(['1000', '1250', '1500']);
    expect(formatTicks([2.5e-5, 5e-5, 7.5e-5])).toEqual(['2.5e-5', '5e-5', '7.5e-5']);
    expect(formatTicks([0.2, 0.4])).toEqual(['0.2', '0.4']);
    expect(formatTicks([7, null, 9, 10])).toEqual(['7', null, '9', '10']);
  });
});
