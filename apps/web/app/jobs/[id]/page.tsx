import { JobDetail } from '../../../components/JobDetail';

export const metadata = { title: 'Job · Expertune' };

export default async function Page({ params }: { params: Promise<{ id: string }> }) {
  const { id } = await params;
  return <JobDetail id={decodeURIComponent(id)} />;
}
