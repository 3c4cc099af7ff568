import { JobsPage } from '../../components/JobsPage';

export const metadata = { title: 'Jobs · Expertune' };

export default function Page() {
  return <JobsPage />;
}
