import { ComparePage } from '../../components/ComparePage';

export const metadata = { title: 'Compare · Expertune' };

export default async function Page({ searchParams }: { searchParams: Promise<{ ids?: string | string[] }> }) {
  const { ids } = await searchParams;
  const list = (Array.isArray(ids) ? ids.join(',') : (ids ?? ''))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return <ComparePage initialIds={[...new Set(list)].slice(0, 10)} />;
}
