import { ModelsPage } from '../../components/ModelsPage';

export const metadata = { title: 'Models · Expertune' };

export default function Page() {
  return <ModelsPage />;
}
