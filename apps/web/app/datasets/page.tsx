import { DatasetsPage } from '../../components/DatasetsPage';

export const metadata = { title: 'Datasets · Expertune' };

export default function Page() {
  return <DatasetsPage />;
}
