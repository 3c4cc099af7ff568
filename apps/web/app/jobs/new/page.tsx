import { NewJobForm } from '../../../components/NewJobForm';

export const metadata = { title: 'New job · Expertune' };

export default function Page() {
  return <NewJobForm />;
}
